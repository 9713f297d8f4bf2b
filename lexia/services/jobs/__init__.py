"""Jobs: the kinds registry, submission, execution, the lifecycle of a row, recovery and retention."""

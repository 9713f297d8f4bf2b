"""Speech: transcription and diarization rules, audio intake, transcript and diarization views, exports."""

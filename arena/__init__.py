"""Open Feedback Arena: a public chat arena with a live human-feedback loop."""

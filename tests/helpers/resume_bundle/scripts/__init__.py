"""Scripts of the tiny test bundle used by tests/test_training_resume.py."""

"""Scripts of the tiny test bundle used by tests/common/training/test_training_resume.py."""

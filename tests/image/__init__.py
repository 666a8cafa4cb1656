"""The container image, built and run (see test_image.py)."""

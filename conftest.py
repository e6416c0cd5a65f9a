"""Puts the repository root on sys.path so tests import `configs` like main.py does."""

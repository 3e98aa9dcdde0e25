"""Django set up for the project's tests, as pytest-django would (without it)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project_settings")
django.setup()

"""A small Django project (no database), with the library adopted when $CLEANUP_ADOPTED is 1.

Adopting is the documented change: the Django middleware first in MIDDLEWARE.
"""

import os

ADOPTED = os.environ.get("CLEANUP_ADOPTED") == "1"

SECRET_KEY = "cleanup-middleware test project: not a secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "project_urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    *(["cleanup_middleware.django.CleanupMiddleware"] if ADOPTED else []),
    "django.middleware.common.CommonMiddleware",
]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

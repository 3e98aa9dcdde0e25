"""The project's WSGI entry point, as ``startproject`` writes it, plus the middleware."""

import os

from django.core.wsgi import get_wsgi_application

from cleanup_middleware import CleanupMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_download.settings")

application = CleanupMiddleware(get_wsgi_application())

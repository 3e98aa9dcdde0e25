"""The least a Django project needs to serve ``views.download``: no database, no apps."""

SECRET_KEY = "cleanup-middleware example: not a secret"  # an example, never deployed
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "django_download.urls"
# What `manage.py runserver` serves: the wrapped application of wsgi.py.
WSGI_APPLICATION = "django_download.wsgi.application"
INSTALLED_APPS: list[str] = []
# First, so that requests that bypass wsgi.py (the test Client, runserver serving another
# application) get hooks too; requests through wsgi.py's wrapper are left to it.
MIDDLEWARE = ["cleanup_middleware.django.CleanupMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

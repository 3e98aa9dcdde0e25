"""Django: a view sends a fresh temporary file with ``FileResponse`` and deletes it afterwards.

The one place to wrap is ``wsgi.py``; run it with gunicorn::

    gunicorn --pythonpath examples django_download.wsgi:application

and fetch http://127.0.0.1:8000/download.
"""

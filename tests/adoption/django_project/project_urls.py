import project_views
from django.urls import path

urlpatterns = [
    path("hello", project_views.hello),
    path("stream", project_views.stream),
    path("moved", project_views.moved),
    path("file", project_views.file),
    path("fails", project_views.fails),
    path("report", project_views.report),
    path("streamed-report", project_views.streamed_report),
    path("file-report", project_views.file_report),
]

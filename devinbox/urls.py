from django.urls import path

from devinbox import views

app_name = "devinbox"

urlpatterns = [
    path("", views.inbox, name="list"),
    path("<str:name>/", views.message, name="message"),
]

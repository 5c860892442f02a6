from django.urls import path

from signups import views

app_name = "signups"

urlpatterns = [
    path("", views.signup, name="signup"),
    path("status/", views.status, name="status"),
    path("status.json", views.status_json, name="status_json"),
    # Before the token's route, which would take "resend" for a token.
    path("verify/resend/", views.resend_verification, name="resend_verification"),
    path("verify/<str:token>/", views.verify, name="verify"),
]

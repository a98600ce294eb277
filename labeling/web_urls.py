from django.urls import path

from labeling import views

urlpatterns = [
    path("label/", views.label_home, name="label-home"),
    path("label/<slug:slug>/", views.label_workspace, name="label-workspace"),
    path("review/", views.review_home, name="review-home"),
    path("review/<slug:slug>/", views.review_list, name="review-list"),
]

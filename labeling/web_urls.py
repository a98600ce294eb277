from django.urls import path

from labeling import views

urlpatterns = [
    path("label/", views.label_home, name="label-home"),
    # Before label/<slug>/: "groups" is this page, not a project.
    path("label/groups/", views.group_home, name="label-groups-home"),
    path("label/groups/<slug:slug>/", views.group_workspace, name="label-groups"),
    path("label/<slug:slug>/", views.label_workspace, name="label-workspace"),
    path("review/", views.review_home, name="review-home"),
    path("review/<slug:slug>/", views.review_list, name="review-list"),
]

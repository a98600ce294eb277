import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """The foreign keys into predictions stop being enforced by the database: on PostgreSQL
    the predictions table becomes partitioned by time (flywheel 0009), and a foreign key into
    a partitioned table must name its whole unique key, partition column included. Django
    still cascades deletes; the prediction_id columns keep their indexes."""

    dependencies = [
        ("flywheel", "0008_shadow_mode"),
        ("labeling", "0007_group_worth"),
    ]

    operations = [
        migrations.AlterField(
            model_name="task",
            name="prediction",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="tasks",
                to="flywheel.prediction",
            ),
        ),
        migrations.AlterField(
            model_name="goldanswer",
            name="prediction",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="gold_answer",
                to="flywheel.prediction",
            ),
        ),
        migrations.AlterField(
            model_name="label",
            name="prediction",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="resolved_labels",
                to="flywheel.prediction",
            ),
        ),
        migrations.AlterField(
            model_name="ruledoutlabel",
            name="prediction",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="ruled_out_labels",
                to="flywheel.prediction",
            ),
        ),
    ]

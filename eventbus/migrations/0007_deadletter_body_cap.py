# A dead letter keeps at most EVENTBUS_DEAD_LETTER_BODY_MAX_BYTES of a body; a cut one records
# the whole length and a sha256 of the whole (issue 23). Existing rows were never cut: both stay empty.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('eventbus', '0006_drop_duplicate_aggregate_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='deadletter',
            name='body_length',
            field=models.PositiveBigIntegerField(blank=True, help_text="Set when the body was cut: the whole body's length in bytes.", null=True),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='body_sha256',
            field=models.CharField(blank=True, help_text='Set when the body was cut: the sha256 (hex) of the whole body.', max_length=64),
        ),
    ]

# The unique constraint outbox_unique_aggregate_sequence indexes the same columns.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('eventbus', '0005_delivery_reconciliation'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='outbox_aggregate_sequence',
        ),
    ]

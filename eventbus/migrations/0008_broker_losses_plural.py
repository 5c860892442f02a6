# The admin said "Broker losss" (Django adds an "s" to the verbose name): the plural is given.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("eventbus", "0007_deadletter_body_cap"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="brokerloss",
            options={"ordering": ["-detected_at"], "verbose_name_plural": "broker losses"},
        ),
    ]

# The image of every django service in docker-compose.yml: the project and its pinned requirements.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Requirements first: the layer is rebuilt only when they change.
COPY requirements.txt .
RUN pip install -r requirements.txt

# An unprivileged user; /app/var is where the app-var volume keeps SQLite, the
# beat schedule and Flower's state (a new named volume takes this ownership).
RUN groupadd --system django && useradd --system --gid django --home-dir /app django \
    && mkdir -p /app/var && chown django:django /app/var
COPY --chown=django:django . .
RUN chmod +x compose/start-*

USER django
EXPOSE 8000 5555
CMD ["compose/start-web"]

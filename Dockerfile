FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# .dockerignore keeps the virtualenv, .env, databases, var/ and .git out of the context.
COPY . .
RUN SECRET_KEY=build python manage.py collectstatic --noinput -v 0
# The code version every dataset manifest records (`make image` passes the git commit).
ARG FLYWHEEL_CODE_VERSION=""
ENV FLYWHEEL_CODE_VERSION=${FLYWHEEL_CODE_VERSION}
RUN useradd --create-home --uid 10001 flywheel && mkdir -p /app/var && chown flywheel /app/var
USER flywheel
EXPOSE 8000
CMD ["gunicorn", "config.asgi:application", "-c", "config/gunicorn.py"]

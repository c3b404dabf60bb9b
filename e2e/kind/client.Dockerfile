# The e2e client: confluent-kafka (librdkafka 2.16) and the repository's
# kclient.py, idle until run.sh execs produce/consume commands in it.
FROM docker.io/library/python:3.11-slim
RUN pip install --no-cache-dir confluent-kafka==2.16.* \
 && useradd --uid 10001 --create-home app
COPY e2e/clients/kclient.py /usr/local/bin/kclient.py
USER 10001
CMD ["sleep", "infinity"]

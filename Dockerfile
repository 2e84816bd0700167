# propledger: one image for the API, the projection workers, the relay and migrations.
# Build: docker build -t propledger .   Run: see deploy/k8s/ (or docker run ... serve).
FROM python:3.13-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain domain
COPY ledger ledger
COPY projections projections
COPY api api
COPY migrations migrations
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.13-slim
RUN useradd --system --uid 10001 --home-dir /app propledger
COPY --from=build /install /usr/local
WORKDIR /app
USER propledger
ENV PROPLEDGER_ENV=production \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# PROPLEDGER_DATABASE_URL and PROPLEDGER_JWT_SECRET come from the environment (secrets).
ENTRYPOINT ["propledger"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

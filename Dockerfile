# bindingd as a sidecar: serves the bindingd.yaml of the folder mounted at /project.
FROM python:3.11-slim

WORKDIR /opt/bindingd
COPY pyproject.toml README.md LICENSE ./
COPY proto proto
COPY clients/python clients/python
COPY bindingd bindingd
# The client's build generates its stubs from proto/ (grpcio-tools only in pip's build environment).
RUN pip install --no-cache-dir ./clients/python .

WORKDIR /project
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; c = grpc.insecure_channel(open('.bindingd/endpoint').read().strip()); sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=2).status == h.HealthCheckResponse.SERVING else 1)"
ENTRYPOINT ["bindingd"]
CMD ["serve"]

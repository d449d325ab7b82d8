#!/usr/bin/env python3
"""Generates a GitOps tree for benchmarks: N Deployments, 3 image references each
(two containers and an init container), in the shapes real repos use (quoted and
plain values, comments, several documents per file for a tenth of the apps)."""
import os
import sys

root, count = sys.argv[1], int(sys.argv[2])
REG = "registry.example.com/team"
for i in range(count):
    d = os.path.join(root, "clusters", f"c{i % 10}", "apps", f"app-{i:05}")
    os.makedirs(d, exist_ok=True)
    svc = f"svc-{i % 50:02}"
    quote = ['', '"', "'"][i % 3]
    doc = f"""# app-{i:05}: generated for the rewrite benchmark
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i:05}
  labels: {{app: app-{i:05}, tier: backend}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: app-{i:05}}}
  template:
    metadata:
      labels: {{app: app-{i:05}}}
    spec:
      initContainers:
        - name: init
          image: {quote}{REG}/init:1.0.0{quote}
          args: ["--wait", "db"]
      containers:
        - name: main
          image: {quote}{REG}/{svc}:1.0.0{quote}  # pinned by autobump
          ports: [{{containerPort: 8080}}]
          env:
            - {{name: MODE, value: production}}
        - name: sidecar
          image: {REG}/sidecar:1.0.0
          resources: {{limits: {{cpu: 100m, memory: 64Mi}}}}
"""
    if i % 10 == 0:
        doc += f"""---
apiVersion: v1
kind: Service
metadata: {{name: app-{i:05}}}
spec:
  ports: [{{port: 80, targetPort: 8080}}]
"""
    with open(os.path.join(d, "deployment.yaml"), "w") as f:
        f.write(doc)

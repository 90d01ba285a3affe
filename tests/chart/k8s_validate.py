#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests offline, against the JSON schemas (derived from
Kubernetes' OpenAPI) that the kubernetes-validate package ships, strictly: an unknown field
fails. Custom resources have no schema there: the kinds in SKIPPED_CRDS are skipped, saying so;
any other kind without a schema fails.

usage: k8s_validate.py [-k VERSION]... FILE...   (VERSION: 1.27.0, ... or "latest")
"""
import argparse
import sys

import kubernetes_validate
import yaml

# Custom resource kinds the chart renders, by (apiVersion, kind).
SKIPPED_CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def resolve(version):
    return kubernetes_validate.latest_version() if version == "latest" else version


def validate_documents(docs, versions, out=print):
    """Returns (errors, validated, skipped) for the manifests in docs (dicts, None ignored)."""
    errors, validated, skipped = [], 0, 0
    for doc in docs:
        if not doc:
            continue
        what = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in SKIPPED_CRDS:
            out(f"  SKIP {what} ({doc['apiVersion']}): a CRD, no schema shipped for it")
            skipped += 1
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, resolve(version), strict=True)
                validated += 1
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{what} against {version}: no schema for "
                              f"{doc.get('apiVersion')} in this Kubernetes version")
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                errors.append(f"{what} against {version}: {path}: {e.message}")
    return errors, validated, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    versions = args.versions or ["latest"]
    failed = False
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
        errors, validated, skipped = validate_documents(docs, versions)
        for e in errors:
            print(f"  FAIL {path}: {e}")
        shown = ", ".join(resolve(v) for v in versions)
        print(f"  {path}: {validated} manifest checks passed against Kubernetes {shown}, "
              f"{skipped} CRD(s) skipped, {len(errors)} failed")
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

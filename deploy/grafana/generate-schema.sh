#!/usr/bin/env bash
# Regenerates deploy/grafana/dashboard.schema.json from the TypeScript `Dashboard` type that the
# npm package @grafana/schema ships (dist/types/raw/dashboard/x/types.gen.d.ts), using
# ts-json-schema-generator. Both are installed in a throw-away folder, never in the repository,
# so the tests need only pip (jsonschema) to validate the dashboard against the committed file.
#
#   deploy/grafana/generate-schema.sh [SCHEMA_VERSION [GENERATOR_VERSION]]
#
# --additional-properties: real dashboards carry datasource-specific keys the TypeScript types do
# not model; notably AnnotationTarget is typed only for Grafana's built-in datasource, so a Flux
# annotation's `target.query`/`refId` would be rejected. tests/test_deploy.py checks separately that
# the dashboard's own keys are declared properties of the schema, so typos are still caught.
set -euo pipefail
SCHEMA_PKG_VERSION="${1:-13.2.3}"
GENERATOR_VERSION="${2:-2.4.0}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent \
  "@grafana/schema@${SCHEMA_PKG_VERSION}" "ts-json-schema-generator@${GENERATOR_VERSION}" typescript
types="node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts"
npx ts-json-schema-generator --path "$types" --type Dashboard --no-type-check \
  --additional-properties -o "$work/dashboard.schema.json"
cp "$work/dashboard.schema.json" "$here/dashboard.schema.json"
echo "wrote $here/dashboard.schema.json (@grafana/schema ${SCHEMA_PKG_VERSION}, ts-json-schema-generator ${GENERATOR_VERSION})"

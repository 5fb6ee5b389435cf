#!/usr/bin/python3
"""Checks the OpenAPI document (Protocol/openapi.yaml, served bundled at GET /openapi.json) with
independent tools from PyPI, against a live coordinator. OpenAPITests.swift runs it.

  openapi.py validate PORT   openapi-spec-validator accepts Protocol/openapi.yaml (its file $refs
                             into Protocol/schemas resolved) and the JSON served at /openapi.json,
                             which is byte for byte the committed bundle; every HTTP example of
                             Protocol/examples/valid passes its bundled schema.
                             Every route of Protocol/README.md section 8 is in the document and
                             the other way round.
  openapi.py fuzz PORT       schemathesis generates a bounded number of requests from the served
                             document for every operation (coverage and fuzzing phases, valid and
                             invalid inputs; then stateful sequences along the document's links,
                             e.g. submit then GET the batch and its jobs) and checks every answer:
                             no 5xx (but /readyz's documented 503), and status code, content type,
                             headers and body as the document says.

Prints one JSON object: {"ok": true, ...} or {"ok": false, "error": ..., "output": ...}.
The tools live in a virtual environment that Scripts/setup makes (pinned versions in
Scripts/python-tools.txt), at $MUSTER_PYTHON_TOOLS or ~/.cache/muster/python-tools.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from xml.etree import ElementTree

import jsonschema

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SOURCE = os.path.join(ROOT, "Protocol", "openapi.yaml")
BUNDLE = os.path.join(ROOT, "Sources", "MusterServer", "OpenAPI", "openapi.json")
EXAMPLES = os.path.join(ROOT, "Protocol", "examples", "valid")
PINS = os.path.join(ROOT, "Scripts", "python-tools.txt")
# Generated test cases per operation and phase; with the coverage phase's boundary cases this is a
# few hundred requests in all, well under a minute on a loaded machine.
MAX_EXAMPLES = 8
SEED = 7460


def tools_dir():
    if os.environ.get("MUSTER_PYTHON_TOOLS"):
        return os.environ["MUSTER_PYTHON_TOOLS"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "muster", "python-tools")


def tool(name):
    path = os.path.join(tools_dir(), "bin", name)
    if not os.access(path, os.X_OK):
        raise Failure(f"{path} is missing: run Scripts/setup (it installs {name} into {tools_dir()})")
    return path


def pinned(package):
    with open(PINS, encoding="utf-8") as f:
        for line in f:
            name, _, version = line.split("#")[0].strip().partition("==")
            if name == package:
                return version
    raise Failure(f"{package} is not pinned in {PINS}")


class Failure(Exception):
    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


def run(argv, timeout, cwd=None):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise Failure(f"{os.path.basename(argv[0])} did not finish within {timeout} s", out[-6000:])
    return p.returncode, p.stdout + p.stderr


def fetch(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def validate(port):
    validator = tool("openapi-spec-validator")
    code, out = run([validator, SOURCE], timeout=120)
    if code != 0 or ": OK" not in out:
        raise Failure("openapi-spec-validator rejects Protocol/openapi.yaml", out[-6000:])

    status, content_type, served = fetch(port, "/openapi.json")
    if status != 200 or not content_type.startswith("application/json"):
        raise Failure(f"GET /openapi.json answered {status} {content_type}")
    with open(BUNDLE, "rb") as f:
        if served != f.read():
            raise Failure("GET /openapi.json is not the committed bundle (rebuild muster after Scripts/openapi)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "openapi.json")
        with open(path, "wb") as f:
            f.write(served)
        code, out = run([validator, path], timeout=120)
        if code != 0 or ": OK" not in out:
            raise Failure("openapi-spec-validator rejects the served /openapi.json", out[-6000:])

    # The document and section 8 of the protocol list the same routes.
    documented = {f"{method.upper()} {path}" for path, item in document_paths(SOURCE).items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    specified = section8_routes()
    if documented != specified:
        raise Failure(f"routes only in Protocol/README.md section 8: {sorted(specified - documented)}; "
                      f"only in Protocol/openapi.yaml: {sorted(documented - specified)}")

    # The bundle means what the schemas mean: every HTTP example passes its bundled schema, and a
    # broken one fails it.
    document = json.loads(served)
    components = {"components": document["components"]}
    checked = []
    for name in sorted(os.listdir(EXAMPLES)):
        if not name.startswith("http."):
            continue
        body = name.split(".")[1]
        schema = dict(components, **{"$ref": f"#/components/schemas/http.{body}"})
        with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
            example = json.load(f)
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(example)]
        if errors:
            raise Failure(f"{name} fails components/schemas/http.{body} of the bundle: {errors[0]}")
        if jsonschema.Draft202012Validator(schema).is_valid([example]):
            raise Failure(f"components/schemas/http.{body} accepts anything")
        checked.append(name)
    if not checked:
        raise Failure(f"no http.* examples in {EXAMPLES}")
    return {"validated": ["Protocol/openapi.yaml", "/openapi.json"], "examples": checked}


def document_paths(path):
    import yaml  # Debian's python3-yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)["paths"]


def section8_routes():
    """`METHOD /path` of every row of the route table in Protocol/README.md section 8."""
    with open(os.path.join(ROOT, "Protocol", "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n## 8. ")
    end = text.find("\n## ", start + 1)
    routes = set()
    for line in text[start:end].splitlines():
        m = re.match(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \|", line)
        if m:
            routes.add(f"{m.group(1)} {m.group(2)}")
            if m.group(2) == "/":
                # The dashboard's row names its assets.
                routes.update(f"GET {asset}" for asset in re.findall(r"`(/dashboard\.[a-z]+)`", line))
    if not routes:
        raise Failure("no route table found in Protocol/README.md section 8")
    return routes


# Schemathesis configuration (its TOML file format). /readyz answers 503 by design while the
# coordinator is not ready (the document says so); every other 5xx is a failure.
CONFIG = """
[[operations]]
include-operation-id = "readiness"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


def fuzz(port):
    schemathesis = tool("schemathesis")
    code, out = run([schemathesis, "--version"], timeout=120)
    version = out.strip().rsplit(" ", 1)[-1]
    if code != 0 or version != pinned("schemathesis"):
        raise Failure(f"schemathesis {version!r} is installed, {pinned('schemathesis')} is pinned: run Scripts/setup", out)
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "schemathesis.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(CONFIG)
        report = os.path.join(tmp, "report.xml")
        argv = [
            schemathesis, "--config-file", config, "run", f"http://127.0.0.1:{port}/openapi.json",
            "--url", f"http://127.0.0.1:{port}",
            "--checks", ",".join(CHECKS),
            "--phases", "examples,coverage,fuzzing,stateful",
            "--mode", "all",
            "--max-examples", str(MAX_EXAMPLES),
            "--seed", str(SEED),
            "--generation-database", "none",
            "--workers", "1",
            "--request-timeout", "30",
            "--suppress-health-check", "all",
            "--report", "junit", "--report-junit-path", report,
            "--no-color",
        ]
        # The tmp folder as working directory keeps any default report folder out of the tree.
        code, out = run(argv, timeout=240, cwd=tmp)
        summary = junit_summary(report)
    if code != 0:
        raise Failure(f"schemathesis found answers the document does not allow (exit {code}): {summary}", out[-12000:])
    if summary.get("tests", 0) == 0:
        raise Failure("schemathesis ran no test", out[-6000:])
    return {"schemathesis": version, "summary": summary, "tail": out.strip().splitlines()[-8:]}


def junit_summary(path):
    """From the JUnit report: one test case per operation, one for all stateful sequences."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    cases = root.findall(".//testcase")
    operations = [c.get("name") for c in cases if re.match(r"^(GET|POST|PUT|PATCH|DELETE) /", c.get("name") or "")]
    return {
        "tests": len(cases),
        "failed": [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None],
        "operations": sorted(operations),
        "stateful": any(c.get("name") == "Stateful tests" for c in cases),
    }


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("validate", "fuzz"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, port = sys.argv[1], int(sys.argv[2])
    try:
        result = validate(port) if mode == "validate" else fuzz(port)
        print(json.dumps(dict(ok=True, **result)))
    except Failure as e:
        print(json.dumps({"ok": False, "error": str(e), "output": e.output}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 15, items 4 and 5: the container image and the deployment templates, checked by
the real tools.

- Containerfile: hadolint; built with podman (the runtime stage, from the debug binary:
  base-image registries are unreachable here) and run read-only as a non-root user, its
  health check answering.
- deploy/aws/latchkey.yaml: cfn-lint; the architecture's properties.
- deploy/kubernetes: both overlays rendered by kustomize (kubectl's), every object
  validated against Kubernetes' schemas (kubernetes-validate, strict); their properties.
- checkov, once, over the template, the rendered overlays and the Containerfile: no failed
  check, and every suppressed one has a reason written beside it and in docs/deploy.md.
- Every LATCHKEY_* variable the templates set is a key of the service it is set for.

Storage-independent: runs in the SQLite pass only.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from lk_harness import latchkey_bin, storage

pytestmark = pytest.mark.skipif(storage() != "sqlite", reason="storage-independent: runs in the SQLite pass")

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
CFN = ROOT / "deploy" / "aws" / "latchkey.yaml"
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("single-node", "replicas")
DOCS = ROOT / "docs" / "deploy.md"
# The Kubernetes version the manifests are validated against.
KUBERNETES_VERSION = "1.34.0"
VENV_BIN = Path(sys.executable).parent
SERVICES = ("identity", "binding", "agent", "gateway")
PORTS = {"identity": 8080, "binding": 8081, "agent": 8082, "gateway": 8443}
UID = 65532


def run(*cmd: str | Path, timeout: float = 300, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}", pytrace=False)
    return out


# --------------------------------------------------------------------------- hadolint

def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return run(VENV_BIN / "hadolint", "--no-color", path, check=False)


def test_hadolint_passes_the_containerfile() -> None:
    out = hadolint(CONTAINERFILE)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_hadolint_reports_a_bad_containerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nUSER root\n")
    out = hadolint(bad)
    assert out.returncode != 0
    assert "DL3006" in out.stdout and "DL3008" in out.stdout, out.stdout


# --------------------------------------------------------------------------- CloudFormation

def cfn_template() -> dict[str, Any]:
    from cfnlint.decode import decode

    template, errors = decode(str(CFN))
    assert not errors, errors
    assert template is not None
    return dict(template)


def test_cfn_lint_passes() -> None:
    out = run(VENV_BIN / "cfn-lint", "--format", "parseable", CFN, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_reports_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(CFN.read_text().replace("SslPolicy: ELBSecurityPolicy-TLS13-1-2-2021-06", "SslPolicy: 7"))
    broken.write_text(broken.read_text().replace("TargetGroupArn: !Ref AgentTargets", "TargetGroupArn: !Ref NoSuchTargets"))
    out = run(VENV_BIN / "cfn-lint", "--format", "parseable", broken, check=False)
    assert out.returncode != 0 and "NoSuchTargets" in out.stdout, out.stdout


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in role["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "PolicyDocument" in policy:
            out += policy["PolicyDocument"]["Statement"]
        elif isinstance(policy, dict) and "Fn::If" in policy:
            out += [s for branch in policy["Fn::If"][1:] if isinstance(branch, dict) and "PolicyDocument" in branch for s in branch["PolicyDocument"]["Statement"]]
    return out


def actions(statement: dict[str, Any]) -> list[str]:
    a = statement["Action"]
    return [a] if isinstance(a, str) else list(a)


def test_aws_template_is_the_seeds_architecture() -> None:
    t = cfn_template()
    # ECS Fargate services for identity, binding and agent; no gateway (the ALB is the edge).
    tasks = resources(t, "AWS::ECS::TaskDefinition")
    containers = {c["Name"]: c for task in tasks.values() for c in task["Properties"]["ContainerDefinitions"]}
    assert set(containers) == {"identity", "binding", "agent"}
    for svc in resources(t, "AWS::ECS::Service").values():
        p = svc["Properties"]
        assert p["LaunchType"] == "FARGATE"
        assert p["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    for name, c in containers.items():
        assert c["ReadonlyRootFilesystem"] is True and c["User"] == f"{UID}:{UID}", name
        assert c["LinuxParameters"]["Capabilities"]["Drop"] == ["ALL"], name
        assert c["HealthCheck"]["Command"] == ["CMD", "/latchkey", "probe", f"http://127.0.0.1:{PORTS[name]}/ping"]
        assert c["LogConfiguration"]["LogDriver"] == "awslogs"
        env = {e["Name"]: e["Value"] for e in c["Environment"]}
        assert env["LATCHKEY_LOG_FORMAT"] == "json"
        # Secrets come from Secrets Manager, never as plain environment values.
        assert not any(re.search(r"CREDENTIAL$|API_KEY$|PASSWORD|SECRET", k) for k in env), env
    identity_env = {e["Name"]: e["Value"] for e in containers["identity"]["Environment"]}
    assert identity_env["LATCHKEY_KEY_PROVIDER"] == "aws-kms"
    assert [s["Name"] for s in containers["binding"]["Secrets"]] == ["LATCHKEY_BINDING_CREDENTIAL"]
    # Binding and agent take users from the ALB's signed header: its signer is this ALB.
    for name in ("binding", "agent"):
        env = {e["Name"]: e["Value"] for e in containers[name]["Environment"]}
        assert env[f"LATCHKEY_{name.upper()}_ALB_SIGNER"] == {"Ref": "LoadBalancer"}

    # The HTTPS listener signs users in with authenticate-oidc, then forwards.
    (listener,) = resources(t, "AWS::ElasticLoadBalancingV2::Listener").values()
    lp = listener["Properties"]
    assert lp["Protocol"] == "HTTPS" and lp["Port"] == 443 and lp["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert [a["Type"] for a in lp["DefaultActions"]] == ["authenticate-oidc", "forward"]
    assert "{{resolve:secretsmanager:" in lp["DefaultActions"][0]["AuthenticateOidcConfig"]["ClientSecret"]["Fn::Sub"]
    rules = resources(t, "AWS::ElasticLoadBalancingV2::ListenerRule")
    assert [a["Type"] for a in rules["BindingRule"]["Properties"]["Actions"]] == ["authenticate-oidc", "forward"]

    # WAF with AWS managed rule groups, on the ALB.
    (acl,) = resources(t, "AWS::WAFv2::WebACL").values()
    groups = {r["Statement"]["ManagedRuleGroupStatement"]["Name"] for r in acl["Properties"]["Rules"] if "ManagedRuleGroupStatement" in r["Statement"]}
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= groups
    assert resources(t, "AWS::WAFv2::WebACLAssociation")

    # RDS PostgreSQL: encrypted with the key, private.
    (db,) = resources(t, "AWS::RDS::DBInstance").values()
    dp = db["Properties"]
    assert dp["Engine"] == "postgres" and dp["StorageEncrypted"] is True and dp["PubliclyAccessible"] is False
    assert dp["KmsKeyId"] == {"Ref": "Key"}
    assert "{{resolve:secretsmanager:" in dp["MasterUserPassword"]["Fn::Sub"]

    # One customer managed key: rotation on; used by S3, logs, secrets.
    (key,) = resources(t, "AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    bucket = t["Resources"]["ConversationBucket"]["Properties"]
    sse = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] == "aws:kms" and sse["KMSMasterKeyID"] == {"Fn::GetAtt": ["Key", "Arn"]}
    logs_may_use = next(s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == "CloudWatchLogsOfThisStack")
    allowed = [a["Fn::Sub"].split(":log-group:")[1] for a in logs_may_use["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]]
    for name, group in resources(t, "AWS::Logs::LogGroup").items():
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}, name
        # The key policy lets CloudWatch Logs use the key for this group.
        group_name = group["Properties"]["LogGroupName"]["Fn::Sub"]
        assert any(re.fullmatch(re.escape(a).replace(r"\*", ".*"), group_name) for a in allowed), (name, group_name, allowed)
    for name, secret in resources(t, "AWS::SecretsManager::Secret").items():
        assert secret["Properties"]["KmsKeyId"] == {"Ref": "Key"}, name

    # Least privilege: only the identity task role uses the key directly, and only under
    # the deployment's encryption context (DescribeKey takes no context); only the agent
    # touches S3, under the conversations prefix.
    roles = resources(t, "AWS::IAM::Role")
    for name, role in roles.items():
        for s in statements(role):
            kms = [a for a in actions(s) if a.startswith("kms:")]
            s3 = [a for a in actions(s) if a.startswith("s3:")]
            cond = s.get("Condition", {})
            if kms and name != "IdentityTaskRole":
                assert "kms:ViaService" in cond.get("StringEquals", {}), (name, s)
            if kms and name == "IdentityTaskRole" and kms != ["kms:DescribeKey"]:
                assert cond == {"StringEquals": {"kms:EncryptionContext:latchkey:deployment": {"Ref": "DeploymentName"}}}, s
            if s3:
                assert name == "AgentTaskRole", (name, s)
                assert s["Resource"] == {"Fn::Sub": "${ConversationBucket.Arn}/conversations/*"} or cond == {"StringLike": {"s3:prefix": ["conversations/*"]}}, s
            assert "*" not in actions(s), (name, s)


# --------------------------------------------------------------------------- Kubernetes

@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render deploy/kubernetes"
    out: dict[str, list[dict[str, Any]]] = {}
    for overlay in OVERLAYS:
        text = run(kubectl, "kustomize", KUSTOMIZE / "overlays" / overlay).stdout
        out[overlay] = [d for d in yaml.safe_load_all(text) if d]
    return out


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def config_env(docs: list[dict[str, Any]], service: str) -> dict[str, str]:
    deployment = objects(docs, "Deployment")[service]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (ref,) = container["envFrom"]
    return dict(objects(docs, "ConfigMap")[ref["configMapRef"]["name"]]["data"])


def test_kustomize_renders_objects_that_kubernetes_accepts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    for overlay, docs in rendered.items():
        kinds = sorted({d["kind"] for d in docs})
        assert kinds == sorted({"ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service"} | ({"PersistentVolumeClaim"} if overlay == "single-node" else {"ServiceAccount"})), (overlay, kinds)
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}", pytrace=False)


def test_kubernetes_validate_reports_an_invalid_object(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    deployment = json.loads(json.dumps(objects(rendered["replicas"], "Deployment")["identity"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/ping"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = json.loads(json.dumps(objects(rendered["replicas"], "Deployment")["identity"]))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_overlays_deploy_every_service_hardened(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        deployments = objects(docs, "Deployment")
        assert set(deployments) == set(SERVICES), overlay
        for name, d in deployments.items():
            where = f"{overlay}/{name}"
            replicas = d["spec"].get("replicas", 1)
            assert replicas == 1 if overlay == "single-node" else replicas >= 2, where
            pod = d["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False, where
            psc = pod["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID, where
            assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            (c,) = pod["containers"]
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False, where
            assert csc["capabilities"] == {"drop": ["ALL"]}, where
            assert c["args"] == ["serve", name], where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            live, ready = ("/oauth2/health", "/oauth2/ready") if name == "gateway" else ("/ping", "/ready")
            assert c["livenessProbe"]["httpGet"]["path"] == live, where
            assert c["readinessProbe"]["httpGet"]["path"] == ready, where
            assert c["ports"][0]["containerPort"] == PORTS[name], where
            # Credentials are files from the service's Secret, never environment values.
            assert "env" not in c and all("secretRef" not in e for e in c["envFrom"]), where
            secret_volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
            assert f"latchkey-{name}" in secret_volumes, where
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert {"/data", "/tmp", "/secrets"} <= set(mounts), where
            services = objects(docs, "Service")
            assert services[name]["spec"]["selector"] == {"app.kubernetes.io/name": name}, where
            pdb = objects(docs, "PodDisruptionBudget")[name]
            assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}, where
        # Secrets hold placeholders only.
        for name, secret in objects(docs, "Secret").items():
            for key, value in (secret.get("stringData") or {}).items():
                assert "REPLACE_ME" in value, (overlay, name, key)
            assert not secret.get("data"), (overlay, name)


def test_overlays_storage(rendered: dict[str, list[dict[str, Any]]]) -> None:
    single, replicas = rendered["single-node"], rendered["replicas"]
    # Single node: SQLite and the generated key file in the identity service's volume.
    for name in ("identity", "agent", "gateway"):
        d = objects(single, "Deployment")[name]
        data = next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
        assert data == {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}}
        assert d["spec"]["strategy"] == {"type": "Recreate"}
    env = config_env(single, "identity")
    assert not any(k in env for k in ("LATCHKEY_DATABASE_URL", "LATCHKEY_DATABASE_URL_FILE", "LATCHKEY_KEY_PROVIDER"))
    # Replicas: PostgreSQL (from the Secret's file), KMS, gateway sessions in the database,
    # conversations in S3, the gateway's keys shared.
    env = config_env(replicas, "identity")
    assert env["LATCHKEY_KEY_PROVIDER"] == "aws-kms" and env["LATCHKEY_DATABASE_URL_FILE"] == "/secrets/database-url"
    assert objects(replicas, "Secret")["latchkey-identity"]["stringData"]["database-url"].startswith("postgres://")
    env = config_env(replicas, "gateway")
    assert env["LATCHKEY_GATEWAY_SESSION_STORE"] == "database" and env["LATCHKEY_DATABASE_URL_FILE"] == "/secrets/database-url"
    assert config_env(replicas, "agent")["LATCHKEY_AGENT_STORE_KIND"] == "s3"
    mounts = objects(replicas, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {m["mountPath"] for m in mounts} >= {"/data/gateway-cookie.key", "/data/gateway-alb-key.pem"}


def test_network_policies_deny_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        policies = objects(docs, "NetworkPolicy")
        deny = policies["default-deny"]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, overlay

        def peers(name: str, direction: str) -> set[str]:
            rules = policies[name]["spec"].get(direction, [])
            key = "from" if direction == "ingress" else "to"
            return {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for r in rules for p in r.get(key, []) if "podSelector" in p and "namespaceSelector" not in p}

        assert peers("gateway", "egress") == {"agent", "binding", "identity"}
        assert peers("agent", "ingress") == {"gateway"} and peers("binding", "ingress") == {"gateway"}
        assert peers("agent", "egress") == {"identity"} and peers("binding", "egress") == {"identity"}
        assert peers("identity", "ingress") == {"gateway", "binding", "agent"}
        # Nothing but the gateway is reachable from outside the namespace on its service port.
        for name in ("agent", "binding", "identity"):
            for rule in policies[name]["spec"]["ingress"]:
                assert rule.get("from"), (overlay, name, rule)


# --------------------------------------------------------------------------- checkov

def test_checkov_passes_with_every_suppression_explained(tmp_path: Path, rendered: dict[str, list[dict[str, Any]]]) -> None:
    checkov = os.environ.get("LATCHKEY_CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    assert Path(checkov).is_file(), f"checkov is not installed at {checkov} (scripts/test installs it in .venv-checkov)"
    shutil.copy(CFN, tmp_path / "latchkey.yaml")
    shutil.copy(CONTAINERFILE, tmp_path / "Dockerfile")  # checkov knows Dockerfiles by name
    for overlay, docs in rendered.items():
        (tmp_path / f"kubernetes-{overlay}.yaml").write_text(yaml.safe_dump_all(docs))
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", LOG_LEVEL="ERROR")
    out = run(checkov, "--directory", tmp_path, "--framework", "cloudformation", "kubernetes", "dockerfile",
              "--skip-download", "--output", "json", "--quiet", check=False, env=env, cwd=tmp_path)
    try:
        reports = json.loads(out.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}", pytrace=False)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"cloudformation", "kubernetes", "dockerfile"}, out.stdout[-2000:]
    failed = [f"{r['check_type']}: {f['check_id']} {f['check_name']} ({f['resource']})" for r in reports for f in r["results"].get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    for r in reports:
        assert r["summary"]["passed"] > 0 and r["summary"]["parsing_errors"] == 0, r["summary"]
    docs = DOCS.read_text()
    for r in reports:
        for s in r["results"].get("skipped_checks", []):
            assert len((s.get("suppress_comment") or "").strip()) > 20, f"{s['check_id']} on {s['resource']} is suppressed without a reason"
            assert s["check_id"] in docs, f"{s['check_id']} is suppressed but not listed in docs/deploy.md"
    assert out.returncode == 0, out.stderr[-3000:]


# --------------------------------------------------------------------------- keys

def service_variables(service: str) -> set[str]:
    text = run(latchkey_bin(), "serve", service, "--help", timeout=30).stdout
    found = set(re.findall(r"\[env: (LATCHKEY_[A-Z0-9_]+)", text))
    assert len(found) > 5, text
    # Keys whose environment variable holds the secret itself (`credential_file` ↔
    # LATCHKEY_<SERVICE>_CREDENTIAL, `llm_api_key_file` ↔ LATCHKEY_AGENT_LLM_API_KEY, …).
    found |= {v.removesuffix("_FILE") for v in found if v.endswith("_FILE")}
    return found


def test_every_variable_the_templates_set_is_a_key_of_its_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    used: dict[str, set[str]] = {s: set() for s in SERVICES}
    for docs in rendered.values():
        for service in SERVICES:
            used[service] |= {k for k in config_env(docs, service) if k.startswith("LATCHKEY_")}
    for c in (c for task in resources(cfn_template(), "AWS::ECS::TaskDefinition").values() for c in task["Properties"]["ContainerDefinitions"]):
        used[c["Name"]] |= {e["Name"] for e in c["Environment"] + c.get("Secrets", []) if e["Name"].startswith("LATCHKEY_")}
    for service, variables in used.items():
        unknown = variables - service_variables(service)
        assert not unknown, f"serve {service} has no key for {sorted(unknown)}"


# --------------------------------------------------------------------------- the image

def podman_build(*args: str | Path, timeout: float = 600) -> None:
    """`podman build`, then removing the intermediate stage images this build left
    (dangling; `--layers=false` would avoid them, but podman 4.3 then fails the build with
    "identifier is not an image")."""
    def dangling() -> set[str]:
        return set(run("podman", "images", "--quiet", "--no-trunc", "--filter", "dangling=true").stdout.split())

    before = dangling()
    try:
        run("podman", "build", *args, timeout=timeout)
    finally:
        left = dangling() - before
        if left:
            run("podman", "rmi", "--force", *sorted(left), check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What the runtime says when this sandbox, not the image, keeps a container from starting.
SANDBOX_LIMITS = ("setrlimit", "cgroups in hybrid mode", "user namespace", "newuidmap", "cannot set up namespace", "mount_setattr")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    podman = shutil.which("podman")
    assert podman, "podman is not installed (scripts/test installs Debian's podman and runc)"
    info = run(podman, "info", "--format", "json", check=False, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: `podman info` exited {info.returncode}: {info.stderr.strip()[-500:]}")
    ctx = tmp_path_factory.mktemp("image")
    binary = ctx / "latchkey"
    # The debug binary without its debug sections (400 MB → 90 MB); same code.
    run("objcopy", "--strip-debug", latchkey_bin(), binary)
    run(ROOT / "deploy" / "container" / "rootfs.sh", binary, ctx / "image")
    binary.unlink()
    shutil.copy(CONTAINERFILE, ctx / "Containerfile")
    tag = f"localhost/latchkey-test:{os.getpid()}"
    podman_build("--quiet", "--format", "docker", "--build-arg", "ROOTFS=prebuilt", "--tag", tag, ctx)
    try:
        yield tag
    finally:
        run(podman, "rmi", "--force", tag, check=False)


def test_image_is_the_binary_on_an_empty_root(image: str, tmp_path: Path) -> None:
    config = json.loads(run("podman", "image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/latchkey"] and config["Cmd"] == ["serve", "identity"]
    health = json.loads(run("podman", "image", "inspect", image).stdout)[0]["Healthcheck"]
    assert health["Test"] == ["CMD", "/latchkey", "probe", "http://127.0.0.1:8080/ping"]
    assert {"8080/tcp", "8081/tcp", "8082/tcp", "8443/tcp"} <= set(config["ExposedPorts"])
    assert "/data" in config["Volumes"]
    name = f"latchkey-files-{os.getpid()}"
    run("podman", "create", "--name", name, image)
    try:
        tar = tmp_path / "root.tar"
        run("podman", "export", "--output", tar, name)
        listing = run("tar", "--numeric-owner", "-tvf", tar).stdout.splitlines()
    finally:
        run("podman", "rm", "--force", "--volumes", name, check=False)
    files = {line.split()[-1].rstrip("/") for line in listing if not line.startswith("d")}
    files = {f for f in files if not f.startswith(("etc/hosts", "etc/hostname", "etc/resolv.conf", "run/", "dev/", "proc/", "sys/"))}
    assert "latchkey" in files and "etc/ssl/certs/ca-certificates.crt" in files, files
    assert not any(f.endswith(("/sh", "/bash", "/busybox", "/curl")) for f in files), files
    extra = {f for f in files if not f.startswith(("lib", "etc/", "usr/lib")) and f != "latchkey"}
    assert not extra, extra
    data = next(line for line in listing if line.rstrip("/").endswith(" data"))
    assert data.startswith("d") and f" {UID}/{UID} " in data, data  # the data volume is the user's


def test_image_runs_read_only_as_non_root(image: str) -> None:
    port = free_port()
    name = f"latchkey-run-{os.getpid()}"
    # podman's default limits (nofile 1048576) are above this sandbox's hard limits, and
    # runc is refused even nproc at the hard limit: ask for less than both.
    nofile, nproc = (min(4096, soft) if soft > 0 else 4096 for soft in (resource.getrlimit(r)[0] for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC)))
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    cmd = ["podman", *runtime, "run", "--detach", "--name", name, "--read-only", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges",
           "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}",
           "--publish", f"127.0.0.1:{port}:8080", image]
    started = run(*cmd, check=False, timeout=120)
    try:
        if started.returncode != 0:
            err = started.stderr.strip()
            if any(limit in err for limit in SANDBOX_LIMITS):
                pytest.skip(f"podman cannot run a container in this sandbox: {err[-600:]}")
            pytest.fail(f"podman run failed: {err[-2000:]}", pytrace=False)
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    assert r.status == 200
                    body = r.read().decode()
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        got = run("podman", "logs", name, check=False)
        logs = got.stdout + got.stderr
        assert body, f"no answer on /ping; container log:\n{logs[-3000:]}"
        assert json.loads(body)["status"] == "Healthy"
        state = json.loads(run("podman", "inspect", name).stdout)[0]
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        assert run("podman", "top", name, "huser").stdout.split()[1:] == [str(UID)]
        # The image's health check, by the probe subcommand inside the container.
        assert run("podman", "healthcheck", "run", name, check=False).returncode == 0
        miss = run("podman", "exec", name, "/latchkey", "probe", "http://127.0.0.1:8080/no-such-path", check=False)
        assert miss.returncode == 1 and "answered 404" in miss.stderr, miss
        # JSON logs by default; the generated key file went to the /data volume.
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        assert any(line["fields"].get("path") == "/data/kek.json" for line in lines), logs[-2000:]
    finally:
        run("podman", "rm", "--force", "--volumes", name, check=False)


def test_build_context_is_the_sources_the_builder_needs(image: str, tmp_path: Path) -> None:
    """.containerignore: the builder stage's context is Cargo.toml, Cargo.lock, crates/
    (no target/, node_modules/) and rootfs.sh; nothing else of the repository."""
    probe = tmp_path / "Containerfile"
    probe.write_text("FROM scratch\nCOPY . /ctx/\n")
    tag = f"localhost/latchkey-context:{os.getpid()}"
    podman_build("--quiet", "--file", probe, "--tag", tag, ROOT)
    name = f"latchkey-context-{os.getpid()}"
    try:
        run("podman", "create", "--name", name, tag, "/none")
        tar = tmp_path / "ctx.tar"
        run("podman", "export", "--output", tar, name)
        paths = [p for p in run("tar", "-tf", tar).stdout.splitlines() if p.startswith("ctx/")]
    finally:
        run("podman", "rm", "--force", "--volumes", name, check=False)
        run("podman", "rmi", "--force", tag, check=False)
    top = {p.split("/")[1] for p in paths if p.count("/") >= 1 and p.split("/")[1]}
    assert top == {"Cargo.toml", "Cargo.lock", "crates", "deploy"}, top
    assert "ctx/deploy/container/rootfs.sh" in paths
    assert "ctx/crates/latchkey/src/main.rs" in paths
    assert not [p for p in paths if "/target/" in p or "/node_modules/" in p]

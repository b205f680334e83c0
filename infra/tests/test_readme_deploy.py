"""The operator's guide (README.md, "Deploying") covers every step of running the deployments."""

from __future__ import annotations

import re

from .deploy import DEPLOY_MD, IMAGES, SERVICES, stack, stack_env

# The guide's build helper: `build SERVICE SOURCE PACKAGE MODULE [PORT]`, one line an image.
BUILD_HELPER = (
    'docker build --build-arg SOURCE="$2" --build-arg PACKAGE="$3" --build-arg MODULE="$4" \\\n'
    '    --build-arg PORT="${5:-3000}" -t "$REGISTRY/$1:$TAG" .'
)


def test_deploy_guide_covers_the_operator_steps() -> None:
    text = DEPLOY_MD.read_text().replace("kubectl -n ticketing ", "kubectl ")
    for step in (
        "docker swarm init",
        "docker swarm join",
        "docker node update --label-add ticketing.data=true",
        "docker secret create jwt_key",
        "docker secret create stripe_key",
        "docker secret create stripe_webhook_secret",
        "docker stack deploy -c docker-compose.yml ticketing",
        "docker stack services ticketing",
        "docker service ps",
        "docker service logs",
        "docker service scale",
        "docker service update --image",
        "docker service rollback",
        "docker stack rm ticketing",
        "kubectl apply -k infra/k8s/overlays/dev",
        "kubectl apply -k infra/k8s/overlays/prod",
        "kubectl rollout status",
        "kubectl rollout history",
        "kubectl rollout undo",
        "kubectl port-forward",
        "kubectl scale",
        "kubectl get pvc",
        "kubectl delete -k",
        "kubectl get events",
        "CrashLoopBackOff",
    ):
        assert step in text, step


def test_deploy_guide_builds_every_image_from_the_dockerfile_with_its_arguments() -> None:
    text = DEPLOY_MD.read_text()
    assert BUILD_HELPER in text
    built = {
        m[1]: (m[2], m[3], m[4], m[5] or "3000")
        for m in re.finditer(r"^build (\S+) +(\S+) +(\S+) +(\S+)(?: +(\d+))?\b", text, re.M)
    }
    assert built == {service: (*IMAGES[service], stack_env(service)["PORT"]) for service in IMAGES}


def test_deploy_guide_creates_every_secret_the_stack_needs() -> None:
    """A deploy stops at the first `secret not found`: the guide creates each one, by name or
    in its per-service loop (`${svc}_...`)."""
    text = DEPLOY_MD.read_text()
    created = set(re.findall(r'docker secret create "?([\w${}]+)"? -', text))
    for secret in stack()["secrets"]:
        generic = re.sub(rf"^({'|'.join(SERVICES)})_(?=mongo_|nats_)", "${svc}_", secret)
        assert secret in created or generic in created, secret

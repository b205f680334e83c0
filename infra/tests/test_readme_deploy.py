"""The operator's guide (README.md, "Deploying") covers every step of running the deployments."""

from __future__ import annotations

from .deploy import DEPLOY_MD, IMAGES


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
    for service in IMAGES:
        assert f"-f {IMAGES[service][0]}/Dockerfile" in text, service

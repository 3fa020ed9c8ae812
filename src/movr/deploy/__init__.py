"""The deploy kit: what production needs, rendered from the same placement spec as the database.

`movr deploy render --target k8s` writes a Containerfile (the app image), Kubernetes manifests for each
region of the spec (one app deployment per region) and the global load balancer (a GKE multi-cluster
Gateway that sends each client to the nearest region and forwards its location). See docs/deploy.md.

    image.py          image references, checked before anything is written
    containerfile.py  the Containerfile and the container's command
    manifests.py      the Kubernetes objects, as data
    render.py         spec -> {path: text}, and writing it all or nothing
    cli.py            `movr deploy render`

Nothing is imported here, so that `movr` starts without loading what only `movr deploy` needs.
"""

"""Business logic behind the routers: registry, classification, images."""

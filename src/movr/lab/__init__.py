"""The one-machine lab: PostgreSQL servers, delayed links, app servers, balancer, supervisor and faults."""

"""Cluster planner: when does disaggregation pay off for a model, GPU, link, workload and SLOs?"""

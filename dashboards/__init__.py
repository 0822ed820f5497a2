"""Web pages for managers and Grafana dashboards for operators (issue 5). Nothing here yet."""

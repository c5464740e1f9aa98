"""Reports: plain-dict context from plan and journal, rendered by Jinja2."""

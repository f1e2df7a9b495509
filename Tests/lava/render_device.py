"""Renders a LAVA device dictionary the way lava-server does (Jinja2, trim_blocks, the templates'
folders searched in order) and prints the device configuration lava-run takes (--device).

  render_device.py DICTIONARY TEMPLATE_DIR...
"""
import sys

import jinja2
import yaml

dictionary, dirs = sys.argv[1], sys.argv[2:]
env = jinja2.Environment(loader=jinja2.FileSystemLoader([*dirs]), trim_blocks=True, autoescape=False)
with open(dictionary, encoding="utf-8") as f:
    text = env.from_string(f.read()).render()
yaml.safe_load(text)  # what lava-run reads must be YAML
print(text)

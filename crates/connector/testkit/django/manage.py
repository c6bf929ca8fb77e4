#!/usr/bin/env python3
"""The test club site's command line: `python3 manage.py runserver`, `migrate`, `seed`."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clubsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)

"""Example python action of the ops workspace: reports on a database connection.

The step's input arrives as one JSON object on standard input; the last `OUTPUT:` line
on standard output becomes the step's output.
"""

import json
import sys

data = json.load(sys.stdin)
db = data["db"]
print(f"database {db['database']} on {db['host']}:{db['port']} as {db['user']}")
print("OUTPUT: " + json.dumps({"database": db["database"], "checked": True}))

"""Example python action of the ops workspace: reports on a database connection.

The step's input arrives as one JSON object on standard input (and in the environment
variable PARTITUR_INPUT). The output is the JSON written to the file named by
PARTITUR_OUTPUT; printing a last `OUTPUT: {...}` line would work too.
"""

import json
import os
import sys

data = json.load(sys.stdin)
db = data["db"]
print(f"database {db['database']} on {db['host']}:{db['port']} as {db['user']}")
with open(os.environ["PARTITUR_OUTPUT"], "w") as output:
    json.dump({"database": db["database"], "checked": True}, output)

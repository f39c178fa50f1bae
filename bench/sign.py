"""Print a SigV4-signed request (headers as JSON) for the benchmark, signed with botocore.

SigV4 signatures stay valid for five minutes, so one signed request can be replayed by the
load generator for a short benchmark (the server checks the date window, not a nonce).
"""
import json
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

url, key_id, secret, body = sys.argv[1:5]
request = AWSRequest(method="POST", url=url, data=body.encode(), headers={"Content-Type": "application/json"})
SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-east-1").add_auth(request)
print(json.dumps(dict(request.headers.items())))

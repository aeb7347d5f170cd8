"""Reads credentials the way an AWS SDK does (botocore), with no network.

Usage: botocore_read.py CONFIG_FILE CREDENTIALS_FILE PROFILE
Prints JSON {"access_key", "secret_key", "token", "method", "expiry"} for PROFILE. The config file
may hold a credential_process; the credentials file is read with botocore's own INI parser.
"""

import json
import os
import sys

import botocore.session


def main() -> None:
    config, credentials, profile = sys.argv[1:4]
    os.environ["AWS_CONFIG_FILE"] = config
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = credentials
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(var, None)
    session = botocore.session.Session(profile=profile)
    creds = session.get_credentials()
    if creds is None:
        print(json.dumps(None))
        return
    frozen = creds.get_frozen_credentials()
    expiry = getattr(creds, "_expiry_time", None)
    print(json.dumps({
        "access_key": frozen.access_key,
        "secret_key": frozen.secret_key,
        "token": frozen.token,
        "method": creds.method,
        "expiry": expiry.isoformat() if expiry else None,
    }))


if __name__ == "__main__":
    main()

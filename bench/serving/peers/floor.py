"""The floor: a bare ASGI callable under uvicorn (httptools, uvloop, no access log).

Reads the body, parses {"inputs": [[30 floats]]} with orjson, calls predict_proba inline on the
event loop and answers {"label": ..., "probabilities": [...]}. Nothing else: no routing, no
validation beyond what parsing does, no monitoring. The practical floor of Python HTTP serving.

    python floor.py --port P --model MODEL.joblib
"""

from __future__ import annotations

import argparse

import joblib
import numpy as np
import orjson
import uvicorn

HEADERS = [(b"content-type", b"application/json")]


def build(model_path: str):
    model = joblib.load(model_path)
    classes = model.classes_

    async def app(scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            rows = np.asarray(orjson.loads(body)["inputs"], dtype=np.float64)
            proba = model.predict_proba(rows)
            answer = {"label": classes[proba.argmax(axis=1)].tolist(),
                      "probabilities": proba.tolist()}
            status, payload = 200, orjson.dumps(answer)
        except Exception as exc:
            status, payload = 400, orjson.dumps({"error": str(exc)})
        await send({"type": "http.response.start", "status": status, "headers": HEADERS})
        await send({"type": "http.response.body", "body": payload})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()

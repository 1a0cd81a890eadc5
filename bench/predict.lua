-- wrk script: POST one 784-byte MNIST digit to /v1/predict over keep-alive.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
local f = assert(io.open(os.getenv("MNISTD_DIGIT") or "digit.raw", "rb"))
wrk.body = f:read("*a")
f:close()

"""300 stalled uploads against a running `edgecut serve models/mnist-fixture`: each connection sends
an inference's headers and one body byte and is reopened as soon as the server closes it; every
0.2 s for 30 s a health check and a one-sample binary inference go out on fresh connections.
Prints the worst latency and the status counts of each as one JSON object (docs/hardening.md).

Run: edgecut serve models/mnist-fixture --addr 127.0.0.1:18600 --backend cpu &
     python3 benches/slow_bodies.py 18600      (standard library only)
"""
import socket, time, struct, sys, json
addr = ("127.0.0.1", int(sys.argv[1]))
N = 300
head = b"POST /v2/models/mnist-fixture/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"
def attacker():
    s = socket.create_connection(addr); s.sendall(head); s.setblocking(False); return s
conns = [attacker() for _ in range(N)]
n = 784*4
js = json.dumps({"inputs":[{"name":"x","datatype":"FP32","shape":[1,1,28,28],"parameters":{"binary_data_size":n}}]}).encode()
infer = b"POST /v2/models/mnist-fixture/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nInference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(js), len(js)+n) + js + b"\0"*n
health = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
def ask(req):
    t = time.monotonic(); s = socket.create_connection(addr); s.settimeout(5); s.sendall(req)
    data = b""
    while True:
        c = s.recv(65536)
        if not c: break
        data += c
    return time.monotonic() - t, int(data.split()[1])
worst = {"health": 0, "infer": 0}; statuses = {"health": {}, "infer": {}}; reconnects = 0
end = time.monotonic() + 30
while time.monotonic() < end:
    for i, s in enumerate(conns):
        try:
            if s.recv(4096) == b"": raise OSError
        except BlockingIOError: pass
        except OSError:
            s.close(); conns[i] = attacker(); reconnects += 1
    for k, req in (("health", health), ("infer", infer)):
        dt, st = ask(req); worst[k] = max(worst[k], dt); statuses[k][st] = statuses[k].get(st, 0) + 1
    time.sleep(0.2)
print(json.dumps({"stalled_connections": N, "seconds": 30, "attacker_reconnects": reconnects, "worst_s": worst, "statuses": statuses}))

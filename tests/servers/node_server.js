// Node.js's own TLS, HTTP/1.1 and HTTP/2 (its bundled OpenSSL, driven through memory BIOs), for
// tests/test_tls.py:  node node_server.js https|http2 PORT CERT KEY
//   GET /                      200 "hello"
//   POST /v1/chat/completions  an OpenAI-style stream: a role-only chunk, max_tokens token chunks (5 ms
//                              apart), a finish-only chunk, data: [DONE]
//   anything else              404
// Prints "ready" once it listens.
'use strict';
const fs = require('fs');
const [mode, port, cert, key] = process.argv.slice(2);
const options = {key: fs.readFileSync(key), cert: fs.readFileSync(cert)};

function chunk(delta, finish) {
  return 'data: ' + JSON.stringify({id: 'c1', object: 'chat.completion.chunk', model: 'node-test-model',
    choices: [{index: 0, delta: delta, finish_reason: finish}]}) + '\n\n';
}

function handle(req, res) {
  if (req.method === 'GET' && req.url === '/') {
    res.writeHead(200, {'content-type': 'text/plain'});
    res.end('hello');
    return;
  }
  if (req.method === 'POST' && req.url === '/v1/chat/completions') {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const n = JSON.parse(body).max_tokens || 4;
      res.writeHead(200, {'content-type': 'text/event-stream'});
      res.write(chunk({role: 'assistant', content: ''}, null));
      let i = 0;
      const timer = setInterval(() => {
        if (i < n) {
          res.write(chunk({content: 'tok' + i}, null));
        } else {
          clearInterval(timer);
          res.write(chunk({}, 'stop'));
          res.end('data: [DONE]\n\n');
        }
        i++;
      }, 5);
    });
    return;
  }
  res.writeHead(404, {'content-type': 'text/plain'});
  res.end('not found');
}

const server = mode === 'http2' ? require('http2').createSecureServer(options, handle)
                                : require('https').createServer(options, handle);
server.listen(+port, '127.0.0.1', () => console.log('ready'));

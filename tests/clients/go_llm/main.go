// An LLM API client in Go (net/http over crypto/tls, HTTP/2 where the server offers it), for
// tests/test_agents_go.py: it waits for a line on stdin (the tracer is attached by then), makes a streamed and
// a plain chat completion and a rate-limited one against BASE with the CA in CA_FILE trusted, and prints what
// it received as JSON: its pid and, per call, the status, the protocol, the answer's model and usage and the
// content chunks it read.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

type call struct {
	Name   string `json:"name"`
	Stream bool   `json:"stream"`
	Status int    `json:"status"`
	Model  string `json:"model"`
	Input  *int   `json:"input"`
	Output *int   `json:"output"`
	Chunks int    `json:"chunks"`
	Proto  string `json:"proto"`
}

type answer struct {
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		Prompt     int `json:"prompt_tokens"`
		Completion int `json:"completion_tokens"`
	} `json:"usage"`
}

func chat(client *http.Client, base, name string, body map[string]any) call {
	stream, _ := body["stream"].(bool)
	c := call{Name: name, Stream: stream}
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-go-client-secret")
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	c.Status = resp.StatusCode
	c.Proto = resp.Proto
	note := func(a answer) {
		if a.Model != "" {
			c.Model = a.Model
		}
		if a.Usage != nil {
			c.Input, c.Output = &a.Usage.Prompt, &a.Usage.Completion
		}
		if stream && len(a.Choices) > 0 && a.Choices[0].Delta.Content != "" {
			c.Chunks++
		}
	}
	if !stream {
		var a answer
		raw, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(raw, &a) == nil {
			note(a)
		}
		return c
	}
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		if !strings.HasPrefix(line, "data: ") || line == "data: [DONE]" {
			continue
		}
		var a answer
		if json.Unmarshal([]byte(line[6:]), &a) == nil {
			note(a)
		}
	}
	return c
}

func main() {
	base, caFile := os.Args[1], os.Args[2]
	pem, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	// HTTP/2 where the server offers it by ALPN, as the default transport does (a transport of one's own
	// needs ForceAttemptHTTP2 for that)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true}}
	bufio.NewReader(os.Stdin).ReadString('\n')
	messages := []map[string]string{{"role": "user", "content": "Say four words about the sea."}}
	calls := []call{
		chat(client, base, "stream", map[string]any{"model": "gpt-4o-mini", "messages": messages, "max_tokens": 6,
			"stream": true, "stream_options": map[string]bool{"include_usage": true}}),
		chat(client, base, "plain", map[string]any{"model": "gpt-4.1", "messages": messages, "max_tokens": 3}),
		chat(client, base, "limited", map[string]any{"model": "rate-limited", "messages": messages}),
	}
	out, _ := json.Marshal(map[string]any{"pid": os.Getpid(), "calls": calls})
	fmt.Println(string(out))
}

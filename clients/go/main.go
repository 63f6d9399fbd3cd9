// A Go caller of llm-service, built offline from Debian's Go packages (grpc-go, protobuf,
// genproto's errdetails) and the Go code protoc generates from protos/llm/v1.
//
//	llm-interop 127.0.0.1:50051 [route]
//	llm-interop burst 127.0.0.1:50051 route callers runs
//
// It calls ListModels, Complete, Stream (every event, in order), a Complete that fails and
// one that is rate-limited, reading each failure's code, google.rpc.ErrorInfo and RetryInfo
// from the status details, and prints one JSON object with what it saw.
// tests/test_interop_go.py builds it in `make test` and runs it against a live server.
//
// The burst mode measures the server's load shedding without a Python client's own cost in
// the figure: `callers` connections each send one Complete at the same instant, and, as the
// baseline, one health Check each at the same instant; each call's time in milliseconds, runs
// times over (after one burst of each timed apart: the server's first), is printed as JSON
// with the Completes' codes and ErrorInfo reasons.
// tests/faults/test_f06_load_shedding.py runs it against a server at its concurrency limit.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	llmv1 "github.com/llm-service/llm-service/gen/go/llm/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	healthv1 "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type event struct {
	Kind string `json:"kind"`
	Text string `json:"text"`
}

type failure struct {
	Code        string            `json:"code"`
	Message     string            `json:"message"`
	Reason      string            `json:"reason"`
	Domain      string            `json:"domain"`
	Metadata    map[string]string `json:"metadata"`
	RetryDelayS float64           `json:"retry_delay_s"`
}

func user(text string) []*llmv1.Message {
	return []*llmv1.Message{{Role: llmv1.Role_ROLE_USER, Parts: []*llmv1.ContentPart{{Part: &llmv1.ContentPart_Text{Text: text}}}}}
}

// describe reads a failed call's status and its google.rpc details.
func describe(err error) failure {
	st := status.Convert(err)
	f := failure{Code: st.Code().String(), Message: st.Message(), Metadata: map[string]string{}}
	for _, d := range st.Details() {
		switch info := d.(type) {
		case *errdetails.ErrorInfo:
			f.Reason, f.Domain, f.Metadata = info.Reason, info.Domain, info.Metadata
		case *errdetails.RetryInfo:
			f.RetryDelayS = info.RetryDelay.AsDuration().Seconds()
		}
	}
	return f
}

func run(target, route string) (map[string]interface{}, error) {
	conn, err := grpc.Dial(target, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	defer conn.Close()
	client := llmv1.NewLLMServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]interface{}{}

	listed, err := client.ListModels(ctx, &llmv1.ListModelsRequest{})
	if err != nil {
		return nil, fmt.Errorf("ListModels: %w", err)
	}
	var models []string
	for _, m := range listed.Models {
		models = append(models, m.Name)
	}
	out["models"] = models

	answer, err := client.Complete(ctx, &llmv1.CompleteRequest{Model: route, Messages: user("Hello from Go")})
	if err != nil {
		return nil, fmt.Errorf("Complete: %w", err)
	}
	out["complete"] = map[string]string{
		"text": answer.Text, "finish_reason": answer.FinishReason.String(), "route": answer.Gateway.GetRoute(),
	}

	stream, err := client.Stream(ctx, &llmv1.StreamRequest{Model: route, Messages: user("Stream to Go")})
	if err != nil {
		return nil, fmt.Errorf("Stream: %w", err)
	}
	var events []event
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("Stream: %w", err)
		}
		switch e := r.Event.(type) {
		case *llmv1.StreamResponse_TextDelta:
			events = append(events, event{"text_delta", e.TextDelta.Text})
		case *llmv1.StreamResponse_ReasoningDelta:
			events = append(events, event{"reasoning_delta", e.ReasoningDelta.Text})
		case *llmv1.StreamResponse_ToolCall:
			events = append(events, event{"tool_call", e.ToolCall.Name})
		case *llmv1.StreamResponse_TextEnd:
			events = append(events, event{"text_end", ""})
		case *llmv1.StreamResponse_Finish:
			events = append(events, event{"finish", ""})
			out["stream_finish"] = map[string]interface{}{
				"finish_reason": e.Finish.FinishReason.String(), "input_tokens": e.Finish.Usage.GetInputTokens(),
			}
		case *llmv1.StreamResponse_Error:
			events = append(events, event{"error", e.Error.Reason})
		}
	}
	out["stream"] = events

	if _, err := client.Complete(ctx, &llmv1.CompleteRequest{Model: route, Messages: user("fail")}); err != nil {
		out["error"] = describe(err)
	}
	noRetries := int32(0)
	limited := &llmv1.CompleteRequest{Model: route, Messages: user("limited"), MaxRetries: &noRetries}
	if _, err := client.Complete(ctx, limited); err != nil {
		out["rate_limited"] = describe(err)
	}
	return out, nil
}

// together sends one call on each connection at the same instant and returns each call's time in
// milliseconds and its error (nil when it succeeded).
func together(conns []*grpc.ClientConn, call func(context.Context, *grpc.ClientConn) error) ([]float64, []error) {
	ms, errs := make([]float64, len(conns)), make([]error, len(conns))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Add(1)
		go func(i int, conn *grpc.ClientConn) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			<-start
			began := time.Now()
			errs[i] = call(ctx, conn)
			ms[i] = float64(time.Since(began).Microseconds()) / 1000
		}(i, conn)
	}
	close(start)
	wg.Wait()
	return ms, errs
}

func burst(target, route string, callers, runs int) (map[string]interface{}, error) {
	conns := make([]*grpc.ClientConn, callers)
	for i := range conns {
		conn, err := grpc.Dial(target, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(10*time.Second))
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", target, err)
		}
		defer conn.Close()
		conns[i] = conn
	}
	health := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := healthv1.NewHealthClient(conn).Check(ctx, &healthv1.HealthCheckRequest{})
		return err
	}
	request := &llmv1.CompleteRequest{Model: route, Messages: user("over the limit")}
	complete := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := llmv1.NewLLMServiceClient(conn).Complete(ctx, request)
		return err
	}
	checked := func() ([]float64, error) {
		ms, errs := together(conns, health)
		for _, err := range errs {
			if err != nil {
				return nil, fmt.Errorf("health Check: %w", err)
			}
		}
		return ms, nil
	}
	coldHealthMs, err := checked() // every connection used once: the server's first health Checks
	if err != nil {
		return nil, err
	}
	codes, reasons := map[string]int{}, map[string]int{}
	count := func(errs []error) {
		for _, err := range errs {
			f := describe(err)
			codes[f.Code]++
			reasons[f.Reason]++
		}
	}
	coldMs, errs := together(conns, complete) // the server's first Completes, timed apart
	count(errs)
	var healthMs, shedMs [][]float64
	for r := 0; r < runs; r++ {
		ms, err := checked()
		if err != nil {
			return nil, err
		}
		healthMs = append(healthMs, ms)
		ms, errs = together(conns, complete)
		count(errs)
		shedMs = append(shedMs, ms)
	}
	return map[string]interface{}{
		"cold_health_ms": coldHealthMs, "cold_shed_ms": coldMs, "health_ms": healthMs, "shed_ms": shedMs, "codes": codes, "reasons": reasons,
	}, nil
}

func burstMain(args []string) (map[string]interface{}, error) {
	if len(args) != 4 {
		return nil, fmt.Errorf("usage: llm-interop burst TARGET ROUTE CALLERS RUNS")
	}
	callers, err := strconv.Atoi(args[2])
	if err != nil || callers < 1 {
		return nil, fmt.Errorf("CALLERS: a positive number, not %q", args[2])
	}
	runs, err := strconv.Atoi(args[3])
	if err != nil || runs < 1 {
		return nil, fmt.Errorf("RUNS: a positive number, not %q", args[3])
	}
	return burst(args[0], args[1], callers, runs)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "burst" {
		out, err := burstMain(os.Args[2:])
		if err == nil {
			err = json.NewEncoder(os.Stdout).Encode(out)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	target, route := "127.0.0.1:50051", "openai"
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	if len(os.Args) > 2 {
		route = os.Args[2]
	}
	out, err := run(target, route)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

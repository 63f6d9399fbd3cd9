// A Node.js caller of llm-service: @grpc/grpc-js with the contract loaded by @grpc/proto-loader.
//
//   node interop.mjs 127.0.0.1:50051 [route] [embedding route]
//
// Calls ListModels, Complete, Stream (every event, in order), Embed, and a Complete that fails,
// reading the failure's code and google.rpc.ErrorInfo from the trailers, and prints one
// JSON object with what it saw. tests/test_interop_node.py runs it against a live server;
// it is also the shortest example of consuming the contract from Node.

import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const protos = path.resolve(here, "../../protos");
const [target = "127.0.0.1:50051", route = "openai", embedRoute = "embed"] = process.argv.slice(2);

const definition = protoLoader.loadSync("llm/v1/llm_service.proto", {
  includeDirs: [protos],
  keepCase: true, // field names as in the .proto file
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true, // a oneof's name holds the name of the field that is set
});
const llm = grpc.loadPackageDefinition(definition).llm.v1;

// The rich error model (google.rpc.Status with ErrorInfo) in the trailer grpc-status-details-bin.
// Only the fields read here, with their google.rpc field numbers.
const rpc = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: "int32", id: 1 },
                message: { type: "string", id: 2 },
                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: "string", id: 1 },
                domain: { type: "string", id: 2 },
                metadata: { keyType: "string", type: "string", id: 3 },
              },
            },
          },
        },
      },
    },
  },
});
const Status = rpc.lookupType("google.rpc.Status");
const ErrorInfo = rpc.lookupType("google.rpc.ErrorInfo");

function errorInfo(err) {
  const [raw] = err.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return null;
  const status = Status.decode(raw);
  const detail = status.details.find((d) => d.type_url.endsWith("/google.rpc.ErrorInfo"));
  return detail ? ErrorInfo.toObject(ErrorInfo.decode(detail.value)) : null;
}

const client = new llm.LLMService(target, grpc.credentials.createInsecure());
const deadline = () => new Date(Date.now() + 30_000);
const messages = [{ role: "ROLE_USER", parts: [{ text: "Hello from Node" }] }];

function unary(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function stream(request) {
  return new Promise((resolve, reject) => {
    const events = [];
    const call = client.Stream(request, { deadline: deadline() });
    call.on("data", (response) => events.push(response));
    call.on("error", reject);
    call.on("end", () => resolve(events));
  });
}

const out = {};
const models = await unary("ListModels", {});
out.models = models.models.map((m) => m.name);
out.kinds = Object.fromEntries(models.models.map((m) => [m.name, m.kind]));

const completed = await unary("Complete", { model: route, messages });
out.complete = { text: completed.text, finish_reason: completed.finish_reason, route: completed.gateway.route };

const events = await stream({ model: route, messages });
out.stream = events.map((e) => ({ kind: e.event, text: e.text_delta?.text ?? "" }));
const finish = events.at(-1)?.finish;
out.stream_finish = finish ? { finish_reason: finish.finish_reason, input_tokens: finish.usage.input_tokens } : null;

const embedded = await unary("Embed", { model: embedRoute, inputs: [{ text: "Hello" }, { text: "from Node" }], dimensions: 4 });
out.embed = {
  dimensions: embedded.dimensions,
  vectors: embedded.embeddings.map((e) => e.values),
  input_tokens: embedded.usage.input_tokens,
  route: embedded.gateway.route,
};

try {
  await unary("Complete", { model: route, messages });
  out.error = null;
} catch (err) {
  out.error = { code: grpc.status[err.code], details: err.details, error_info: errorInfo(err) };
}

client.close();
process.stdout.write(JSON.stringify(out) + "\n");

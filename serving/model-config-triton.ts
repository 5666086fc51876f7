// A served model's configuration as Triton's ModelConfig message (proto/inference.proto, the subset of Triton's
// model_config.proto fleet fills in), for the ModelConfig RPC and GET /v2/models/NAME/config. Tools such as
// perf_analyzer read it first: the inputs and outputs with their data types and dims, max_batch_size (dims then
// leave the batch dimension out), dynamic batching, and for a fan-out ensemble its members as ensemble steps.
import { PLATFORM_ENSEMBLE } from './ensemble.ts';
import type { ServedModel } from './served-model.ts';
import type { TensorMetadata } from './protocol.ts';

const dataType = (t: string) => `TYPE_${t}`;

export function tritonModelConfig(model: ServedModel) {
  const tensors = [...model.inputs, ...model.outputs];
  // batched when every tensor's first dimension is the batch: then Triton's dims leave it out
  const batched = model.kind !== 'mil' && tensors.every(t => t.shape[0] === -1);
  const dims = (t: TensorMetadata) => (batched ? t.shape.slice(1) : t.shape);
  const c = model.config;
  const parameters: Record<string, { string_value: string }> = {
    max_request_images: { string_value: String(c.maxRequestImages) },
    max_queue_images: { string_value: String(c.maxQueueImages) },
    fleet_kind: { string_value: model.kind },
  };
  if (c.aggregation) parameters.aggregation = { string_value: c.aggregation };
  const config: Record<string, unknown> = {
    name: model.name,
    platform: model.platform,
    backend: model.platform === PLATFORM_ENSEMBLE ? '' : 'onnxruntime',
    version_policy: { latest: { num_versions: 1 } },
    max_batch_size: batched ? c.maxBatchSize : 0,
    input: model.inputs.map(t => ({
      name: t.name,
      data_type: dataType(t.datatype),
      format: 'FORMAT_NCHW',
      dims: dims(t),
    })),
    output: model.outputs.map(t => ({ name: t.name, data_type: dataType(t.datatype), dims: dims(t) })),
    parameters,
  };
  const e = c.ensemble;
  if (e) {
    config.ensemble_scheduling = {
      step: e.members.map(m => ({
        model_name: m.name,
        model_version: m.version ? Number(m.version) : -1,
        input_map: { input: 'input' },
        output_map: { probabilities: 'probabilities' },
      })),
    };
    Object.assign(parameters, {
      ensemble_aggregation: { string_value: e.aggregation },
      ensemble_weights: { string_value: JSON.stringify(e.members.map(m => m.weight)) },
      ensemble_remote: { string_value: JSON.stringify(e.members.map(m => m.remote)) },
      ensemble_quorum: { string_value: String(e.quorum) },
      ensemble_deadline_ms: { string_value: String(e.deadlineMs) },
    });
  } else if (model.kind !== 'mil') {
    config.dynamic_batching = { preferred_batch_size: [], max_queue_delay_microseconds: c.maxQueueDelayMs * 1000 };
  }
  return config;
}

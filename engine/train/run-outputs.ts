// What a finished CNN or SimCLR training run reports and writes (summary, model files, plots, a one-line
// headline), shared by `fleet train` and the coordinator's data-parallel jobs so both produce the same outputs.
import { exportCnn } from '../model/cnn.ts';
import { exportSimclrClassifier, exportEncoder } from '../model/simclr.ts';
import type { TensorSet } from '../model/params.ts';
import type { EpochMetrics, Evaluation } from './train-classifier.ts';
import type { SimclrEpoch, SimclrResult } from './train-simclr.ts';
import { trainingCurves, lineChart } from '../report/plots.ts';

export interface RunOutputs {
  summary: Record<string, unknown>;
  files: Record<string, string | Uint8Array>;
  headline: string;
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
export const pct = (x?: number) => (x === undefined ? 'n/a' : `${(100 * x).toFixed(2)}%`);

export function cnnRunOutputs(r: {
  params: TensorSet;
  buffers: TensorSet;
  history: EpochMetrics[];
  test?: Evaluation;
  seconds: number;
  imagesPerSecond: number;
  bestEpoch: number;
  stoppedEarly: boolean;
  recipe: string;
  dataset: string;
}): RunOutputs {
  return {
    summary: {
      epochs: r.history.length,
      seconds: round(r.seconds, 2),
      images_per_second: Math.round(r.imagesPerSecond),
      test_accuracy: r.test?.accuracy,
      test_loss: r.test?.loss,
      best_epoch: r.bestEpoch,
      stopped_early: r.stoppedEarly,
      recipe: r.recipe,
    },
    files: {
      'model.onnx': exportCnn(r.params, r.buffers, { dataset: r.dataset, recipe: r.recipe }),
      ...trainingCurves(r.history),
    },
    headline: `test accuracy ${pct(r.test?.accuracy)}, test loss ${r.test?.loss.toFixed(4)} after ${r.history.length} epoch(s), ${round(r.seconds, 1)}s training (${Math.round(r.imagesPerSecond)} img/s)`,
  };
}

export function simclrRunOutputs(r: {
  params: TensorSet;
  buffers: TensorSet;
  probe: TensorSet;
  history: SimclrEpoch[];
  seconds: number;
  imagesPerSecond: number;
  linearEval: Pick<SimclrResult['linearEval'], 'testAccuracy' | 'testLoss'>;
  supervised: boolean;
  dataset: string;
}): RunOutputs {
  const lin = r.linearEval;
  return {
    summary: {
      epochs: r.history.length,
      seconds: round(r.seconds, 2),
      images_per_second: Math.round(r.imagesPerSecond),
      linear_eval_accuracy: lin.testAccuracy,
      test_accuracy: lin.testAccuracy,
      test_loss: lin.testLoss,
      supervised: r.supervised,
    },
    files: {
      'model.onnx': exportSimclrClassifier(r.params, r.buffers, r.probe, {
        dataset: r.dataset,
        method: r.supervised ? 'supcon' : 'simclr',
      }),
      'encoder.onnx': exportEncoder(r.params, r.buffers),
      'loss.svg': lineChart({
        title: 'Contrastive loss per epoch',
        xLabel: 'epoch',
        yLabel: 'loss',
        series: [{ name: 'train', points: r.history.map(h => [h.epoch, h.train_loss]) }],
      }),
    },
    headline: `linear evaluation test accuracy ${pct(lin.testAccuracy)} after ${r.history.length} epoch(s) of ${r.supervised ? 'SupCon' : 'SimCLR'}, ${round(r.seconds, 1)}s training`,
  };
}

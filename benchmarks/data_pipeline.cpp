// Throughput of the CPU data pipelines the trainer runs every step: MAMBA-PT (track sequences
// from the real barrel event, MDM masking, NTP pairs, packing) and FM4NPP (one TPC-like event of
// 856 points -> features, r-sort, k-NNN (k = 30), EPR raster scan). One thread.
// Usage: bench_data_pipeline [shared_dir]
#include <cmath>
#include <cstdio>
#include <string>

#include "bench_util.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/data/batching.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/data/mdm_masking.hpp"
#include "mambatrack/data/ntp_pairs.hpp"
#include "mambatrack/data/track_sequences.hpp"
#include "mambatrack/data/trackml_io.hpp"

using namespace mambatrack;
using namespace mambatrack::data;

int main(int argc, char** argv) {
  set_num_threads(1);
  const std::string shared = argc > 1 ? argv[1] : "../shared";
  std::printf("| %-44s | %12s | %16s |\n", "step", "median ms", "rate");
  std::printf("|----------------------------------------------|--------------|------------------|\n");
  try {
    const Event ev = read_event(shared + "/data/trackml/qallse_ez-0.5_hpt-1.0/event000001000");
    const Tokenizer tok = Tokenizer::from_events({ev});
    TrackSequenceOptions o;
    o.volumes = {8, 13, 17};
    o.max_hits = 0;
    TrackSequences seqs;
    const double t_seq = bench::median_seconds([&] { seqs = build_track_sequences(ev, tok, o); });
    std::printf("| %-44s | %12.3f | %10.0f hits/s |\n", "track sequences (27,543-hit barrel event)", 1e3 * t_seq,
                ev.hits.size() / t_seq);
    std::vector<int64_t> ids(512);
    for (int64_t i = 0; i < 512; ++i) ids[i] = (i * 37) % seqs.size();
    PackedBatch pk;
    const double t_pack = bench::median_seconds([&] { pk = pack_batch(seqs, ids); }, 21);
    std::printf("| %-44s | %12.3f | %10.2f Mtok/s |\n", "pack a batch of 512 tracks", 1e3 * t_pack, pk.num_tokens() / t_pack / 1e6);
    MaskOptions mo;
    mo.rate = 0.5;
    const double t_mask = bench::median_seconds([&] { mask_packed(pk.tokens, pk.cu_seqlens, ids, mo, 42, 3); }, 21);
    std::printf("| %-44s | %12.3f | %10.2f Mtok/s |\n", "MDM masking (MAMBA-PT, rate 0.5), 512 tracks", 1e3 * t_mask,
                pk.num_tokens() / t_mask / 1e6);
    std::vector<float> p(512);
    for (int64_t i = 0; i < 512; ++i) p[i] = seqs.p[ids[i]];
    Philox rng(42, 9);
    const double t_ntp = bench::median_seconds([&] { permutation_pairs(p, rng, true); }, 21);
    std::printf("| %-44s | %12.3f | %10.2f Mpair/s |\n", "NTP balanced permutation pairs, 512 tracks", 1e3 * t_ntp, 512 / t_ntp / 1e6);
  } catch (const Error& e) {
    std::printf("(MAMBA-PT rows skipped: %s)\n", e.what());
  }
  Philox rng(7, 0);
  std::vector<float> exyz;
  for (int i = 0; i < 856; ++i) {
    const double r = 31.5 + 43.7 * rng.uniform_double(), phi = rng.uniform(-M_PI, M_PI);
    exyz.insert(exyz.end(), {static_cast<float>(rng.uniform(10, 900)), static_cast<float>(r * std::cos(phi)),
                             static_cast<float>(r * std::sin(phi)), static_cast<float>(rng.uniform(-105, 105))});
  }
  const PointSet pts = points_from_exyz(exyz.data(), 856);
  Fm4nppOptions fo;
  fo.edges = compute_voxel_edges({pts}, 8, 8, 6, {});
  const double t_fm = bench::median_seconds([&] { prepare_fm4npp_event(points_from_exyz(exyz.data(), 856), fo); }, 21);
  std::printf("| %-44s | %12.3f | %10.0f events/s |\n", "FM4NPP event (856 points, k = 30, EPR)", 1e3 * t_fm, 1 / t_fm);
  return 0;
}

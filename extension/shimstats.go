package extension

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protowire"
)

// ShimStatsField is the field number of ShimStats in a Stats response's
// metrics message.
const ShimStatsField protowire.Number = 1000

// ShimStats are a shim's own figures; the counters only grow for the life
// of the shim.
type ShimStats struct {
	Pid uint32 `json:"pid"`
	// RSSBytes is the shim's resident memory.
	RSSBytes uint64 `json:"rss_bytes"`
	// LogLines counts the lines written to CRI logs, each once however
	// many entries it took; LogLinesSplit those written as more than one
	// (partial entries, then a full one); LogEntriesDropped the entries
	// whose write failed (a full disk, say).
	LogLines          uint64 `json:"log_lines"`
	LogLinesSplit     uint64 `json:"log_lines_split"`
	LogEntriesDropped uint64 `json:"log_entries_dropped"`
}

// AppendShimStats adds st to a serialized metrics message.
func AppendShimStats(metrics []byte, st ShimStats) []byte {
	data, _ := json.Marshal(st) // plain fields: cannot fail
	metrics = protowire.AppendTag(metrics, ShimStatsField, protowire.BytesType)
	return protowire.AppendBytes(metrics, data)
}

// ShimStatsFrom finds the shim's figures in a serialized metrics message.
func ShimStatsFrom(metrics []byte) (ShimStats, bool) {
	for len(metrics) > 0 {
		num, typ, n := protowire.ConsumeTag(metrics)
		if n < 0 {
			return ShimStats{}, false
		}
		metrics = metrics[n:]
		if num == ShimStatsField && typ == protowire.BytesType {
			data, n := protowire.ConsumeBytes(metrics)
			var st ShimStats
			if n < 0 || json.Unmarshal(data, &st) != nil {
				return ShimStats{}, false
			}
			return st, true
		}
		n = protowire.ConsumeFieldValue(num, typ, metrics)
		if n < 0 {
			return ShimStats{}, false
		}
		metrics = metrics[n:]
	}
	return ShimStats{}, false
}

package shim

import (
	"context"
	"reflect"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
)

// registerTaskV2 serves the v3 implementation under the task API v2
// service name. The v2 and v3 messages are identical on the wire, so each
// v2 call is decoded straight into the v3 request type.
func registerTaskV2(server *ttrpc.Server, svc taskAPI.TTRPCTaskService) {
	iface := reflect.TypeFor[taskAPI.TTRPCTaskService]()
	impl := reflect.ValueOf(svc)
	methods := make(map[string]ttrpc.Method, iface.NumMethod())
	for i := range iface.NumMethod() {
		name := iface.Method(i).Name
		fn := impl.MethodByName(name)
		reqType := fn.Type().In(1).Elem()
		methods[name] = func(ctx context.Context, unmarshal func(any) error) (any, error) {
			req := reflect.New(reqType)
			if err := unmarshal(req.Interface()); err != nil {
				return nil, err
			}
			out := fn.Call([]reflect.Value{reflect.ValueOf(ctx), req})
			if err, _ := out[1].Interface().(error); err != nil {
				return nil, err
			}
			return out[0].Interface(), nil
		}
	}
	server.RegisterService("containerd.task.v2.Task", &ttrpc.ServiceDesc{Methods: methods})
}

package shim

import (
	"context"
	"reflect"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
)

// registerTaskV3 serves the implementation under the task API v3 service
// name. Its messages are identical to v2's on the wire, so each call is
// decoded straight into the v2 request type.
func registerTaskV3(server *ttrpc.Server, svc taskAPI.TTRPCTaskService) {
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
	server.RegisterService("containerd.task.v3.Task", &ttrpc.ServiceDesc{Methods: methods})
}
